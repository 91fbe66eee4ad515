"""Multitask transfer: one shared encoder, one head per task, trained in one Trainer run (recipes/multitask.py).

`spec` reads the task file (--tasks) and the recipe's options; `sampler` chooses the task of every batch; `model`
holds the task models around one encoder; `trainer` feeds it one task per batch and scores each task apart; `export`
writes each task's standalone model; `task` assembles the recipe's `Task` from a single task's load and build steps.
See docs/multitask.md.
"""
