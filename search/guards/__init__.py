"""What protects a running trial: a wall-clock limit, and Ctrl-C/SIGTERM held during storage writes."""
