"""Full-spectrum pruning: graph metrics of sparse layers, PaI masks, PAGS/PEGS search, training and analysis.

The package behind the Snakemake workflow of "Don't Just Prune by Magnitude! Your Mask Topology is Another
Secret Weapon" (NeurIPS 2023). Every workflow step is a thin script over a function in here.
"""

__version__ = "0.1.0"
