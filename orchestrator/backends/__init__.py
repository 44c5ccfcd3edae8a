"""Where a JobPlan runs: docker (this machine), slurm (a cluster), kubernetes."""
