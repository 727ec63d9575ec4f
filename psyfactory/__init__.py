"""PsyFactory: LLaMA-Factory configs and glue for Chinese mental-health fine-tuning."""
__version__ = "0.1.0"
