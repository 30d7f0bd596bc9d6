"""The live app, composed in one place: the session and its thread map (`session.py`), the music
source (`source.py`), the controls (`controller.py`) and the headless `run` command (`run.py`).
The window (`ui/`) adds widgets and a thin Qt bridge to the same parts."""
