"""The machine a run meets: devices (device), per-machine measurements, cached (probe), memory
estimates against what is free (estimate), and what the machine offers the app (sysinfo).
"""
