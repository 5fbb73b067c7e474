"""Media helpers shared by the editing pipelines, the CLI and the app: video files (`video`), optical flow (`flow`)
and edit-quality metrics (`metrics`)."""
