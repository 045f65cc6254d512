"""The scalar tags NVFlare's TensorBoard receiver wrote in a job (for tests that check experiment tracking)."""

import glob
import os
from typing import Set


def scalar_tags(folder: str) -> Set[str]:
    """``{"<event folder relative to folder>:<tag>"}`` of every scalar in the event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        accumulator = EventAccumulator(os.path.dirname(events))
        accumulator.Reload()
        prefix = os.path.relpath(os.path.dirname(events), folder)
        tags |= {f"{prefix}:{t}" for t in accumulator.Tags()["scalars"]}
    return tags
