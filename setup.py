"""rwdet: randomly wired networks (RandWire) for Detectron2.

torch, torchvision and detectron2 are installed by tools/setup.sh (pinned, and detectron2 from
a wheel or a user's own build), so they are not pip requirements here.
"""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """``build_py`` that also ships configs/ as package data in rwdet/model_zoo/configs (the
    place ``rwdet.model_zoo.get_config_file`` looks first), as Detectron2's setup.py puts its
    configs inside detectron2/model_zoo: a wheel then holds every YAML and Python config."""

    def run(self):
        super().run()
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
        target = os.path.join(self.build_lib, "rwdet", "model_zoo", "configs")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=lambda folder, names: [
            n for n in names if not os.path.isdir(os.path.join(folder, n)) and not n.endswith((".yaml", ".py"))])


setup(
    name="rwdet",
    version="0.1.0",
    description="RandWire (Xie et al., ICCV 2019) backbones, ImageNet pretraining and detection transfer for Detectron2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["rwdet", "rwdet.*"]),
    cmdclass={"build_py": BuildPyWithConfigs},
    install_requires=[
        "networkx>=2.6",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.2",
        "tabulate",
        "tqdm",
        "matplotlib",
        # numpy 2 works with detectron2 0.7.2's Python code (tools/setup.sh drops its wheel's pin)
        "numpy",
        # tools/demo.py reads and writes images with OpenCV
        "opencv-python",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # tools/export_model.py and MODEL.DEPLOY.RUNTIME; versions that work beside numpy 1.26 and 2.x
        # (onnx 1.18+ pulls ml_dtypes, which needs numpy 2; torch.onnx.export needs onnx); nncf:
        # int8 post-training quantization of OpenVINO models (MODEL.DEPLOY.PRECISION int8)
        "deploy": ["onnx==1.17.0", "onnxruntime==1.32.0", "openvino==2026.4.1", "nncf==3.4.0"],
    },
)
