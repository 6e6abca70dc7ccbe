"""The ablation study of the Minitron / group-aware SSM pruning findings (issue 12):
``experiments/study.py`` parses the options and calls :func:`jaxprune.study.run.run_study`.
Modules: sizes (:mod:`.config`), data split (:mod:`.data`), run cache (:mod:`.cache`),
cached runs (:mod:`.runs`), the findings (:mod:`.findings`), numbers (:mod:`.stats`),
``STUDY.md`` and plots (:mod:`.report`)."""
