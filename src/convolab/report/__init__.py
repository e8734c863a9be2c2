"""The report of a run: its data gathered once (:mod:`~convolab.report.data`), then rendered as one self-contained
HTML page (:mod:`~convolab.report.html`)."""
