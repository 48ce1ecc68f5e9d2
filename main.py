"""Entry point in the repository: the same as `python -m sfp` (see sfp/cli.py).

    python main.py                                   # the embedded demo
    python main.py -m mitigator=on,off enhancer=on,off
    python main.py backbone=vit_l14 datasets=[voc21,ade20k] paths.data_root=/data/seg
"""
from sfp.cli import main

if __name__ == "__main__":
    main()
