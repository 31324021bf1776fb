"""Table contracts shared by the jobs, the API, the docs and BI users."""
