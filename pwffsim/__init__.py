"""pwffsim: network co-simulator for personalized wireless federated fine-tuning of LLMs."""
__version__ = "0.1.0"
