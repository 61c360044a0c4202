"""Forms by area: one module per view module that takes input (``grading/views/<area>.py`` ->
``grading/forms/<area>.py``)."""
