"""Reports from records alone: grouping into configurations, paired tests and verdicts, sections rendered
as HTML, Markdown and terminal tables, plots, cost curves and the run list (`peftbench ls`)."""
