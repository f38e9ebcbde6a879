"""Planning: the recipe a time budget buys on this machine (planner, fitted to planner_law.json)
and grids of runs (sweep).
"""
