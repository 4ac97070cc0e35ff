"""Training: the loop as plain functions, optimizer and schedule, metrics logging, runtime and DDP."""
