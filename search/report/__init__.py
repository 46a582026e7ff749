"""One self-contained HTML report of a study: `python -m search.report --study NAME`.

`study_report` is the command; the other modules each build the HTML of one kind of section.
"""
