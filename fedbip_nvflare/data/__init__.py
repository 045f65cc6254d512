"""Site data loading: files a site points at, and the built-in offline benchmark suites."""

from fedbip_nvflare.data.images import ImageSplit, ImageTaskData, load_image_site_data, load_image_task_data
from fedbip_nvflare.data.instruct import InstructExample, InstructSplit, InstructTaskData, load_instruct_task_data
from fedbip_nvflare.data.suites import GROUP_TASKS, SUITES, TEXT_TASKS, load_suite_site, site_names, suite_groups
from fedbip_nvflare.data.text import TextSplit, TextTaskData, load_site_data, load_text_file, shift_labels, site_list
from fedbip_nvflare.data.vision_suite import VISION_SUITES, load_vision_suite_site, vision_suite_groups

__all__ = [
    "GROUP_TASKS",
    "ImageSplit",
    "ImageTaskData",
    "InstructExample",
    "InstructSplit",
    "InstructTaskData",
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
    "load_text_file",
    "load_vision_suite_site",
    "shift_labels",
    "site_list",
    "site_names",
    "suite_groups",
    "vision_suite_groups",
]
