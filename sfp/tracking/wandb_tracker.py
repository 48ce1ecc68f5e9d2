"""Experiment tracking that never blocks or kills a job.

`make_tracker("wandb", ...)` gives a WandbTracker; `make_tracker("none")` a NullTracker.
The local results.json (sfp.tracking.results_store) is the source of truth; W&B is a view.

WandbTracker never prompts for a login, bounds the time wandb.init may take, falls back
online -> offline -> no-op with a warning when W&B fails, and finishes its run so that
consecutive jobs of a Hydra multirun log into separate runs. wandb is imported lazily.
"""
from __future__ import annotations

import math
import netrc
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable
from urllib.parse import urlsplit

import numpy as np

from sfp.data.sample import IGNORE_INDEX
from sfp.errors import ConfigError
from sfp.tracking import logged_keys as keys
from sfp.tracking.results_store import to_jsonable

__all__ = [
    "Tracker",
    "NullTracker",
    "WandbTracker",
    "TrackingWarning",
    "make_tracker",
    "has_wandb_credentials",
    "MODES",
    "BACKENDS",
]

MODES = ("auto", "online", "offline", "disabled")
# The values W&B accepts in the WANDB_MODE environment variable (dryrun and run are its old spellings).
ENV_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")
BACKENDS = ("wandb", "none")
MAX_TAG_LENGTH = 64  # W&B rejects longer tags
DEFAULT_BASE_URL = "https://api.wandb.ai"

Overlay = Tuple[np.ndarray, np.ndarray, np.ndarray]


class TrackingWarning(UserWarning):
    """W&B could not do what was asked; the job goes on (results.json is unaffected)."""


def _warn(message: str) -> None:
    warnings.warn(message, TrackingWarning, stacklevel=3)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # Enum (e.g. the config schema's WandbMode) -> str


@runtime_checkable
class Tracker(Protocol):
    run_dir: Optional[str]

    def start(self) -> None: ...

    def log_dataset(
        self,
        dataset: str,
        metrics: Mapping[str, Any],
        class_names: Sequence[str],
        overlays: Optional[Sequence[Overlay]] = None,
    ) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def log_layer_stats(self, dataset: str, stats: Mapping[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class _RunContext:
    """`with tracker:` starts the run and always finishes it, marked failed when the body raised."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.finish(1 if exc_type is not None else 0)
        return False


class NullTracker(_RunContext):
    """Backend "none": every call is a no-op."""

    mode = "none"
    run_dir: Optional[str] = None

    def __init__(self, **_ignored: Any) -> None:
        pass

    @property
    def active(self) -> bool:
        return False

    def start(self) -> None:
        pass

    def log_dataset(self, dataset, metrics, class_names, overlays=None) -> None:
        pass

    def log_summary(self, summary) -> None:
        pass

    def log_table(self, key, columns, rows) -> None:
        pass

    def log_layer_stats(self, dataset, stats) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass



# --------------------------------------------------------------------------- credentials


def has_wandb_credentials(base_url: Optional[str] = None) -> bool:
    """Whether W&B credentials are configured for the server, without prompting or network:
    WANDB_API_KEY / WANDB_IDENTITY_TOKEN_FILE, a netrc entry, or wandb's own settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # wandb's own lookup (netrc, settings files, session); internal API, so guarded
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        host = base_url or settings.base_url
        if wbauth.session_credentials(host=host) is not None:
            return True
        if wbauth.read_netrc_auth(host=host):
            return True
        return bool(settings.api_key) and (base_url is None or base_url == settings.base_url)
    except Exception:
        return _netrc_has_entry(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)


def _netrc_has_entry(url: str) -> bool:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(url).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


# --------------------------------------------------------------------------- W&B


class WandbTracker(_RunContext):
    """Logs one job to one W&B run.

    mode: "auto" (online when credentials are configured, else offline; WANDB_MODE, when set,
    decides instead), "online", "offline" or "disabled". After any W&B failure the tracker
    warns (TrackingWarning) and turns the remaining calls into no-ops.
    """

    def __init__(
        self,
        project: str,
        entity: Optional[str] = None,
        mode: str = "auto",
        group: Optional[str] = None,
        name: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        config: Optional[Mapping[str, Any]] = None,
        dir: Optional[str] = None,
        *,
        job_type: Optional[str] = None,
        notes: Optional[str] = None,
        base_url: Optional[str] = None,
        init_timeout: float = 20.0,
        finish_timeout: float = 120.0,
        max_overlays: int = 50,
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        mode = _plain(mode)
        if mode not in MODES:
            raise ConfigError(f"tracker.mode must be one of {', '.join(MODES)}; got {mode!r}")
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if env_mode and env_mode not in ENV_MODES:  # W&B itself would read it too, whatever tracker.mode says
            raise ConfigError(f"WANDB_MODE={os.environ['WANDB_MODE']!r} is not a W&B mode: expected one of "
                              f"{', '.join(ENV_MODES)} (or unset it)")
        self.project = project
        self.entity = entity
        self.requested_mode = mode
        self.group = group
        self.name = name
        self.tags = _clean_tags(tags or [])
        self.config = _plain_config(config or {})
        self.dir = str(dir) if dir is not None else None
        self.job_type = job_type
        self.notes = notes
        self.base_url = base_url
        self.init_timeout = float(init_timeout)
        self.finish_timeout = float(finish_timeout)
        self.max_overlays = int(max_overlays)
        self.extra_settings = dict(settings or {})

        self.mode: Optional[str] = None  # the mode in use after start(): online/offline/disabled/none
        self.run: Any = None
        self.run_dir: Optional[str] = None
        self._wandb: Any = None
        self._started = False
        self._finished = False
        self._broken = False
        self._warned_unstarted = False

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.run is not None and not self._finished and not self._broken

    def start(self) -> None:
        """Open the run (idempotent; a finished tracker does not start again)."""
        if self._started or self._finished:
            return
        self._started = True
        try:
            import wandb
        except Exception as e:
            self._give_up(f"W&B logging is off: cannot import wandb ({e})")
            return
        self._wandb = wandb

        mode = self._resolve_mode()
        if mode == "online" and not has_wandb_credentials(self.base_url):
            _warn("W&B mode is online but no API key is configured (WANDB_API_KEY or "
                  "`wandb login`); logging offline instead (upload later with `wandb sync`)")
            mode = "offline"

        if mode == "online":
            try:
                self._init("online")
                return
            except Exception as e:
                _warn(f"wandb.init failed online ({_short(e)}); logging offline instead "
                      "(upload later with `wandb sync`)")
                mode = "offline"
        try:
            self._init(mode)
        except Exception as e:
            self._give_up(f"wandb.init failed in {mode} mode ({_short(e)}); W&B logging is off")

    def _resolve_mode(self) -> str:
        if self.requested_mode != "auto":
            return self.requested_mode
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        env_mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        if env_mode in ("online", "offline", "disabled"):
            return env_mode
        return "online" if has_wandb_credentials(self.base_url) else "offline"

    def _settings(self) -> Any:
        wandb = self._wandb
        wanted: Dict[str, Any] = {
            "start_method": "thread",  # older wandb under Hydra; gone in 0.31 (filtered below)
            # quiet skips the post-login identity query, which costs ~10 s when the server is
            # unreachable; it also trims console chatter.
            "quiet": True,
            "init_timeout": self.init_timeout,
            # Fail fast on refused connections (~3 s) instead of retrying until init_timeout.
            "x_graphql_retry_max": 3,
            "x_graphql_retry_wait_min_seconds": 0.5,
            "x_graphql_retry_wait_max_seconds": 1.0,
            # Don't block the end of a job on a slow upload; data stay on disk for `wandb sync`.
            "finish_timeout": self.finish_timeout,
            # Finish any run left open by an earlier job in this process.
            "reinit": "finish_previous",
        }
        if self.base_url:
            wanted["base_url"] = self.base_url
        # Our defaults adapt to the installed wandb; explicit `settings` are passed as given.
        fields = getattr(wandb.Settings, "model_fields", None)
        if fields is not None:
            wanted = {k: v for k, v in wanted.items() if k in fields}
        wanted.update(self.extra_settings)
        return wandb.Settings(**wanted)

    def _init(self, mode: str) -> None:
        wandb = self._wandb
        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group,
            name=self.name,
            job_type=self.job_type,
            notes=self.notes,
            tags=list(self.tags),
            config=self.config,
            dir=self.dir,
            mode=mode,
            settings=self._settings(),
        )
        if run is None:
            raise RuntimeError("wandb.init returned no run")
        self.run = run
        self.mode = mode
        if mode != "disabled":
            files_dir = getattr(run, "dir", None)
            self.run_dir = str(Path(files_dir).parent) if files_dir else None

    def _give_up(self, message: str) -> None:
        _warn(message)
        self._broken = True
        self.mode = "none"

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run (failed when exit_code != 0). Safe to call any number of times."""
        if self._finished:
            return
        self._finished = True
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=int(exit_code))
        except Exception as e:
            _warn(f"wandb run.finish failed ({_short(e)}); the local results are unaffected")


    # -- logging ----------------------------------------------------------------------------

    def _guard(self, what: str, fn, *args) -> None:
        if not self._started and not self._warned_unstarted:
            self._warned_unstarted = True
            _warn(f"W&B {what} called before start(); nothing is logged")
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as e:
            self._broken = True
            _warn(f"W&B {what} failed ({_short(e)}); further W&B logging in this job is off")

    def log_dataset(
        self,
        dataset: str,
        metrics: Mapping[str, Any],
        class_names: Sequence[str],
        overlays: Optional[Sequence[Overlay]] = None,
    ) -> None:
        """Log one dataset's record entry: summary keys miou/<dataset>, aacc/<dataset>,
        macc/<dataset>, the table per_class_iou/<dataset> (class, iou) and mask overlays."""
        self._guard("log_dataset", self._log_dataset, dataset, metrics, class_names, overlays)

    def _log_dataset(self, dataset, metrics, class_names, overlays) -> None:
        wandb = self._wandb
        payload: Dict[str, Any] = {}
        for name, logged in keys.DATASET_METRICS.items():
            if name in metrics:
                payload[logged.key(dataset=dataset)] = _number(metrics[name])

        per_class = metrics.get("per_class_iou")
        if per_class is not None:
            if isinstance(per_class, Mapping):
                names = [n for n in class_names if n in per_class]
                listed = set(names)
                names += [n for n in per_class if n not in listed]
                rows = [[str(n), _number(per_class[n])] for n in names]
            else:
                rows = [[str(n), _number(v)] for n, v in zip(class_names, per_class)]
            payload[keys.PER_CLASS_IOU.key(dataset=dataset)] = wandb.Table(columns=["class", "iou"], data=rows)

        if overlays:
            images = self._overlay_images(dataset, class_names, overlays)
            if images:
                payload[keys.OVERLAYS.key(dataset=dataset)] = images
        if payload:
            self.run.log(payload)

    def _overlay_images(self, dataset, class_names, overlays) -> List[Any]:
        wandb = self._wandb
        if len(class_names) > IGNORE_INDEX:
            _warn(f"{dataset}: {len(class_names)} classes do not fit W&B's 8-bit masks; "
                  "overlays are not logged")
            return []
        labels = {i: str(n) for i, n in enumerate(class_names)}
        labels[IGNORE_INDEX] = "ignore"
        images = []
        for i, item in enumerate(list(overlays)[: self.max_overlays]):
            image, pred, gt = (np.asarray(x) for x in item[:3])
            caption = str(item[3]) if len(item) > 3 else f"{dataset} #{i}"
            if image.ndim != 3 or image.shape[2] != 3 or pred.shape != image.shape[:2] or gt.shape != pred.shape:
                raise ValueError(
                    f"overlay {i} of {dataset}: image {image.shape}, prediction {pred.shape} and "
                    f"ground truth {gt.shape} must be HxWx3, HxW, HxW"
                )
            masks = {
                "predictions": {"mask_data": pred.astype(np.uint8), "class_labels": labels},
                "ground_truth": {"mask_data": gt.astype(np.uint8), "class_labels": labels},
            }
            images.append(wandb.Image(image.astype(np.uint8), masks=masks, caption=caption))
        return images

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Set run summary values, e.g. {"miou/mean": 43.1}."""
        self._guard("log_summary", self._log_summary, summary)

    def _log_summary(self, summary) -> None:
        clean = to_jsonable(dict(summary))
        self.run.summary.update({k: (math.nan if v is None else v) for k, v in clean.items()})

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a generic table under `key` (e.g. per-layer statistics)."""
        self._guard("log_table", self._log_table, key, columns, rows)

    def _log_table(self, key, columns, rows) -> None:
        data = [list(to_jsonable(list(r))) for r in rows]
        self.run.log({key: self._wandb.Table(columns=list(columns), data=data)})

    def log_layer_stats(self, dataset: str, stats: Mapping[str, Any]) -> None:
        """Per-layer outlier statistics: a table, one line chart per statistic against `layer` (so runs of a
        group overlay as one line per configuration), and the outlier-position heat map as an image."""
        self._guard("log_layer_stats", self._log_layer_stats, dataset, stats)

    def _log_layer_stats(self, dataset, stats) -> None:
        if not stats:
            return
        layer, names = keys.LAYER.key(dataset=dataset), keys.statistics()
        rows = [[value, *(stats[name][i] for name in names)] for i, value in enumerate(stats["layer"])]
        self._log_table(keys.LAYER_STATS_TABLE.key(dataset=dataset), ["layer", *names], rows)
        for name in names:  # lines against the layer axis, one per configuration in a group
            self.run.define_metric(keys.LAYER_STAT.key(dataset=dataset, statistic=name), step_metric=layer)
        for row in rows:
            self.run.log({layer: row[0], **{keys.LAYER_STAT.key(dataset=dataset, statistic=name):
                                            (math.nan if value is None else value)
                                            for name, value in zip(names, row[1:])}})
        heatmap = stats.get("heatmap")
        if heatmap:
            counts = np.asarray(heatmap["counts"], dtype=np.float64)
            scaled = (255 * counts / counts.max()) if counts.max() > 0 else counts
            image = np.kron(scaled, np.ones((16, 16))).astype(np.uint8)  # one 16-pixel square per patch
            self.run.log({keys.HEATMAP.key(dataset=dataset): self._wandb.Image(
                image, caption=f"{dataset}: outlier positions at the detection block (white = most often)")})


# --------------------------------------------------------------------------- helpers


def _clean_tags(tags: Sequence[Any]) -> List[str]:
    out: List[str] = []
    for tag in tags:
        text = str(_plain(tag)).strip()[:MAX_TAG_LENGTH]
        if text and text not in out:
            out.append(text)
    return out


def _plain_config(config: Any) -> Dict[str, Any]:
    plain = to_jsonable(config)
    if not isinstance(plain, dict):
        raise ConfigError(f"the tracker config must be a mapping, got {type(config).__name__}")
    return plain


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _short(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_tracker(backend: Any, **kwargs: Any) -> Tracker:
    """backend "wandb" -> WandbTracker(**kwargs); "none" (or None) -> NullTracker."""
    backend = _plain(backend)
    if backend is None or backend == "none":
        return NullTracker()
    if backend == "wandb":
        return WandbTracker(**kwargs)
    raise ConfigError(f"tracker.backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
