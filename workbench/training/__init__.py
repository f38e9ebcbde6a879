"""Training: the loop and its events (trainer), the request a client builds (request), a resumed
run's new budget (budget), the lines events make (notices), optimizers and schedules (optim),
DDP helpers (distributed), evaluation (evaluate) and the follower of a torchrun child run
(follower).
"""
