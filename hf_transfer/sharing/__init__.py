"""Sharing a run: the model card (cards), peft adapters saved or merged (adapters), and the Hub push (hub)."""
