"""The PaI methods by name and what each depends on (torch-free: the Snakefile reads it at parse time)."""

METHODS = ("snip", "grasp", "synflow", "erk", "random", "magnitude")
DATA_METHODS = ("snip", "grasp")  # score on training mini-batches
SHAPE_METHODS = ("synflow",)  # data-free, but its all-ones input takes the data's image shape
GLOBAL_METHODS = ("snip", "grasp", "synflow", "magnitude")  # one global threshold over per-weight scores
NOISY_METHODS = ("synflow", "magnitude")  # deterministic given the weights: search candidates score noisy copies
