"""Analysis of the workflow's results: the paper's tables and figures."""
