"""nanogpt: declarative, reproducible GPT training. One TOML file states an experiment."""

__version__ = "0.1.0"
