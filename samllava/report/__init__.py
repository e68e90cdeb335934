"""What a run reports: figures (:mod:`.figures`), the paper's numbers (:mod:`.paper_values`), the
headline summary (:mod:`.summary`) and the comparison of a run with the committed one (:mod:`.comparison`)."""
