"""What a run reports: figures (:mod:`.figures`), the paper's numbers (:mod:`.paper_values`) and claims
(:mod:`.paper_claims`), the per-run values tables pool (:mod:`.runs`), the headline summary (:mod:`.summary`),
what the run says about each claim (:mod:`.claims`), and a run against a reference run, cell by cell
(:mod:`.comparison`; the committed one: :mod:`.reproduction`)."""
