"""The paper's figures, drawn from the workflow's tables: one module per family (attribution accuracy,
appendix, editing, backdoor), all in one shared style (`style`)."""
