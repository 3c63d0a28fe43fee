"""A seeded fault soak of distributed goim (``python -m tests.soak``).

2 logic + 2 connect nodes on a scratch MariaDB database and a private Redis,
driven by robust clients while a seeded random schedule of faults runs; at the
end the recorded history is checked against a model (see ``checker.py``).
"""
