from setuptools import find_packages, setup

TRAIN = ["tensorflow-cpu==2.21.*", "keras>=3.10,<4"]
RUNTIME = ["ai-edge-litert>=2.0"]
NODE = RUNTIME + ["grpcio>=1.60", "grpcio-health-checking>=1.60", "protobuf>=5"]
BRIDGE = NODE + ["pyserial>=3.5", "cobs>=1.2", "tflite-micro"]
DEV = ["pytest>=8", "hypothesis>=6", "grpcio-tools>=1.60", "tqdm>=4"]

setup(
    name="paradis-tf",
    version="0.1.0",
    description="Deployment kit for ParaDiS (Parallelly Distributable Slimmable) networks on edge hardware",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["paradis_tf", "paradis_tf.*", "firmware_bridge", "firmware_bridge.*"]),
    package_data={"firmware_bridge": ["c/*", "*.md"]},
    install_requires=["numpy>=1.26"],
    extras_require={
        "train": TRAIN + RUNTIME + ["tflite-micro"],
        "runtime": RUNTIME,
        "node": NODE,
        "bridge": BRIDGE,
        "dev": DEV,
        "all": sorted(set(TRAIN + BRIDGE + DEV)),
    },
    entry_points={"console_scripts": ["paradis=paradis_tf.cli:main"]},
)
