"""One module per task: its `load` step (checked data, collator, processor, config, metrics) and the model
hooks that are special to it. A recipe declares a `Task` from these."""
