"""rwdet's shipped configs, as Detectron2's ``detectron2.model_zoo``: :func:`get_config_file`,
:func:`get_config` and :func:`list_configs` (see :mod:`rwdet.model_zoo.model_zoo`)."""

from .model_zoo import config_root, get_config, get_config_file, list_configs

__all__ = ["config_root", "get_config", "get_config_file", "list_configs"]
