"""Site data loading: files a site points at, and the built-in offline benchmark suites."""

from fedbip_nvflare.data.suites import GROUP_TASKS, SUITES, TEXT_TASKS, load_suite_site, site_names, suite_groups
from fedbip_nvflare.data.text import TextSplit, TextTaskData, load_site_data, load_text_file, shift_labels, site_list

__all__ = [
    "GROUP_TASKS",
    "SUITES",
    "TEXT_TASKS",
    "TextSplit",
    "TextTaskData",
    "load_site_data",
    "load_suite_site",
    "load_text_file",
    "shift_labels",
    "site_list",
    "site_names",
    "suite_groups",
]
