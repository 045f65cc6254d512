"""Package set-up for fedbip-nvflare."""

from setuptools import find_packages, setup

setup(
    name="fedbip-nvflare",
    version="0.1.0",
    description="FedBip: bi-level personalized federated fine-tuning of foundation models for NVIDIA FLARE",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fedbip_nvflare", "fedbip_nvflare.*"]),
    python_requires=">=3.10",
    install_requires=[
        "nvflare>=2.9,<2.10",
        "torch>=2.2",
        "transformers>=4.45",
        "peft>=0.13",
        "numpy>=1.24",
        "safetensors>=0.4",
        "pandas>=2.0",
        "matplotlib>=3.7",  # fedbip report
        "tensorboard>=2.15",  # experiment tracking (NVFlare's TensorBoard receiver)
        "gguf>=0.10",  # causal LMs from GGUF files (transformers' GGUF loader)
        "rouge-score>=0.1.2",  # ROUGE-L of causal-LM generations
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.5", "black>=24", "mlflow-skinny>=3", "alembic", "sqlalchemy"],
    },
    entry_points={"console_scripts": ["fedbip=fedbip_nvflare.cli:main"]},
)
