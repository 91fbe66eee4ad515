"""Running a recipe: the `Task` a recipe declares and `run_task` (task), the output folder and resume (outputs),
launch defaults and process teardown (launch), and the end of a run: evaluate, save, summarise (finish)."""
