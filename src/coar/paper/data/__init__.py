"""The paper's datasets: uint8 images (normalised on the fly) and token sets, each declared once in
`specs` and loaded through `registry`; one module per source's loader. Importing the package loads nothing
(the workflow's plan reads the specs without numpy or torch)."""
