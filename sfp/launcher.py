"""The sweep launcher: the jobs of a Hydra sweep grouped into shared passes (`sfp.grouping`).

Hydra hands the launcher every job of a sweep. This launcher first prepares each job in this process exactly
as Hydra's own launchers do (its composed config, output directory, `.hydra/` files; an invalid config
fails that job alone), groups the prepared jobs that can share a pass, and hands the groups to an executor:
in this process (`inner` = Hydra's basic launcher), in parallel processes (`inner` = the joblib launcher),
or as one SLURM array task per group (`inner` = a submitit launcher). With `group=false` the inner launcher
runs the sweep itself, one job at a time as before. Hydra requires the plugin class itself to live in the
`hydra_plugins` package; `hydra_plugins.sfp_launcher.SFPLauncher` is this class under that name.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

if TYPE_CHECKING:  # the runner (and torch) are imported when a sweep runs, not when Hydra scans plugins
    from .runner import Job, JobResult

log = logging.getLogger(__name__)

class GroupingLauncher(Launcher):
    def __init__(self, group: bool = True, max_variants: Optional[int] = None,
                 inner: Optional[DictConfig] = None) -> None:
        self.group = bool(group)
        self.max_variants = max_variants
        self.inner_config = inner
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if self.inner_config is None or "_target_" not in self.inner_config:
            raise ValueError("hydra.launcher.inner must be a launcher config with a _target_ "
                             "(e.g. the defaults entry `- basic@inner`)")
        from .grouping import check_max_variants

        check_max_variants(self.max_variants)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _inner_launcher(self) -> Launcher:
        config = OmegaConf.create(OmegaConf.to_container(self.config, resolve=False))
        with open_dict(config):
            config.hydra.launcher = self.inner_config
        return Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        inner = self._inner_launcher()
        if not self.group:
            return inner.launch(job_overrides, initial_job_idx)
        returns = self._prepare(job_overrides, initial_job_idx)
        prepared = [i for i, ret in enumerate(returns) if ret.status == JobStatus.COMPLETED]
        jobs = [returns[i]._return_value for i in prepared]
        from .grouping import group_indices  # after the configs are known to be valid

        groups = [[jobs[i] for i in members] for members in group_indices([job.run for job in jobs],
                                                                            self.max_variants)]
        log.info("%d jobs in %d passes (%s)", len(jobs), len(groups), ", ".join(str(len(g)) for g in groups))
        results = self._execute(inner, groups)
        by_dir: Dict[Path, JobResult] = {r.output_dir: r for group in results for r in group}
        for i in prepared:
            result = by_dir[returns[i]._return_value.output_dir]
            if result.ok:
                returns[i].return_value = result.record
            else:
                returns[i].return_value = result.error
                returns[i].status = JobStatus.FAILED
        return returns

    def _prepare(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        """Each job's config, output directory and .hydra files, as Hydra's basic launcher makes them; the
        job's return value is its `Job` (or the error of an invalid config)."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Preparing %d jobs", len(job_overrides))
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            returns.append(run_job(hydra_context=self.hydra_context, task_function=_prepare_job,
                                   config=sweep_config, job_dir_key="hydra.sweep.dir",
                                   job_subdir_key="hydra.sweep.subdir"))
        return returns

    def _execute(self, inner: Launcher, groups: List[List[Job]]) -> List[List[JobResult]]:
        kind = type(inner).__name__
        if kind == "BasicLauncher":
            return [evaluate_group(group) for group in groups]
        if kind == "JoblibLauncher":
            from joblib import Parallel, delayed

            params = {k: v for k, v in OmegaConf.to_container(self.inner_config, resolve=True).items()
                      if k != "_target_"}
            return Parallel(**params)(delayed(evaluate_group)(group) for group in groups)
        executor_kind = getattr(get_class(self.inner_config._target_), "_EXECUTOR", None)
        if executor_kind is not None:  # hydra-submitit: one array task per group
            return _submit(executor_kind, dict(inner.params), groups, self.config)
        raise ValueError(f"hydra.launcher.inner={self.inner_config._target_} cannot run grouped passes: use "
                         "the basic, joblib or submitit launchers, or hydra.launcher.group=false")


def _prepare_job(cfg: DictConfig) -> Job:
    """The task run for each job while preparing: its typed job (raises on an invalid config)."""
    from .cli import hydra_job
    from .errors import SFPError

    try:
        return hydra_job(cfg, HydraConfig.get())
    except SFPError as exc:
        log.error("job #%s: %s", HydraConfig.get().job.num, exc)
        raise


def evaluate_group(jobs: Sequence[Job]) -> List[JobResult]:
    """One group's pass (in this process or a worker): the log goes to each job's own log file too, and each
    job's table is printed as a single run prints it."""
    from .runner import evaluate_jobs, print_result

    sfp_log = logging.getLogger("sfp")
    handlers = [logging.FileHandler(job.output_dir / "sfp.log") for job in jobs]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        sfp_log.addHandler(handler)
    if sfp_log.level == logging.NOTSET:
        sfp_log.setLevel(logging.INFO)
    try:
        results = evaluate_jobs(jobs, grouped=True, max_variants=None)
    finally:
        for handler in handlers:
            sfp_log.removeHandler(handler)
            handler.close()
    if int(os.environ.get("RANK", "0")) == 0:
        for result in results:
            print_result(result)
    return results


def _submit(executor_kind: str, params: Dict[str, Any], groups: List[List[Job]],
            config: DictConfig) -> List[List[JobResult]]:
    """One array task per group through submitit, with the inner launcher's queue parameters."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    folder = params.pop("submitit_folder")
    init = {f"{executor_kind}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(cluster=executor_kind, folder=folder, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the rest carry the executor's prefix
    executor.update_parameters(**{k if k in shared else f"{executor_kind}_{k}": v for k, v in params.items()})
    log.info("submitit %r: %d array tasks into %s", executor_kind, len(groups), config.hydra.sweep.dir)
    tasks = executor.map_array(evaluate_group, groups)
    return [task.result() for task in tasks]
