"""Site data: the task-data containers, readers of the files a site points at, and the offline benchmark suites.

``split`` (the shared seeded held-out split and subsampling) ← ``text`` / ``instruct`` / ``images`` (one reader per
file format) ← the suites (``suites``, ``instruct_suite``, ``flan``, ``vision_suite``) ← ``site_data`` (a site's
data configuration → its task data, for every modality: the one dispatcher). ``sites`` names suite sites and
``config`` checks a configuration's keys.
"""

from fedbip_nvflare.data.images import ImageSplit, ImageTaskData, load_image_site_data
from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData
from fedbip_nvflare.data.site_data import (
    SITE_DATA,
    check_data_config,
    load_image_task_data,
    load_instruct_task_data,
    load_task_data,
)
from fedbip_nvflare.data.suites import GROUP_TASKS, SUITES, TEXT_TASKS, load_suite_site, site_names, suite_groups
from fedbip_nvflare.data.text import TextSplit, TextTaskData, load_site_data, load_text_file, shift_labels, site_list
from fedbip_nvflare.data.vision_suite import VISION_SUITES, load_vision_suite_site, vision_suite_groups

__all__ = [
    "check_data_config",
    "GROUP_TASKS",
    "ImageSplit",
    "ImageTaskData",
    "InstructExample",
    "InstructSplit",
    "InstructTaskData",
    "SITE_DATA",
    "SUITES",
    "TEXT_TASKS",
    "TextSplit",
    "TextTaskData",
    "VISION_SUITES",
    "load_image_site_data",
    "load_image_task_data",
    "load_instruct_task_data",
    "load_site_data",
    "load_suite_site",
    "load_task_data",
    "load_text_file",
    "load_vision_suite_site",
    "shift_labels",
    "site_list",
    "site_names",
    "suite_groups",
    "vision_suite_groups",
]
