"""`make bench`: what measuring costs, and how the pipeline scales (issue 8). Figures, not tests."""
