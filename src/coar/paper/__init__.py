"""The paper's reproduction: the workflow's plan and what its rules build on."""
