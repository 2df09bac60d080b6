"""Warnings and log lines of the libraries under lvu that no user can act on, silenced once per process.

Standard library only: ``lvu --help`` imports this, and the quickstart's probe processes call it too.
"""

from __future__ import annotations

import logging
import warnings


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_library_noise() -> None:
    # Lightning 2.6 under torch 2.13 warns about its own pytree helper on every run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Frozen backbones (probes, adapters) are kept in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Evaluating a checkpoint needs its weights, not the ModelCheckpoint that wrote it.
    warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
    # Our loaders hand out whole batches; Lightning's prediction loop looks for a sampler's indices and says so.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")
    # Lightning advertises its cloud logger at every Trainer construction.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
