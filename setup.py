"""rwdet: randomly wired networks (RandWire) for Detectron2.

torch, torchvision and detectron2 are installed by tools/setup.sh (pinned, and detectron2 from
a wheel or a user's own build), so they are not pip requirements here.
"""

from setuptools import find_packages, setup

setup(
    name="rwdet",
    version="0.1.0",
    description="RandWire (Xie et al., ICCV 2019) backbones, ImageNet pretraining and detection transfer for Detectron2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["rwdet", "rwdet.*"]),
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
        # tools/export_model.py and MODEL.DEPLOY.RUNTIME; versions that install beside numpy<2
        # (onnx 1.18+ pulls ml_dtypes, which needs numpy 2; torch.onnx.export needs onnx)
        "deploy": ["onnx==1.17.0", "onnxruntime==1.32.0", "openvino==2026.4.1"],
    },
)
