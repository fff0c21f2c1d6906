"""Hub mode (issue 15, docs/hub-design.md): a cohort's learners on one JupyterHub. Built so far: the learners'
accounts (:mod:`ladderlab.hub.accounts`) and the jail their servers start in (:mod:`ladderlab.hub.jail`)."""
