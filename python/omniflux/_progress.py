"""Progress: one tqdm bar per stage, and the user's callback(stage, step, total), which cancels
the call by returning False."""


class Progress:
    def __init__(self, show: bool, callback):
        if callback is not None and not callable(callback):
            from ._errors import Error

            raise Error("callback is not callable", "callback", "callable(stage, step, total)", type(callback).__name__)
        self.show, self.callback, self.bar, self.stage = show, callback, None, None

    def __call__(self, stage: str, step: int, total: int):
        if self.show:
            if stage != self.stage or self.bar is None:
                self.close()
                from tqdm.auto import tqdm

                self.stage = stage
                self.bar = tqdm(total=total, desc=stage, unit="step" if stage == "denoise" else "it")
            self.bar.update(step - self.bar.n)
        if self.callback is not None:
            return self.callback(stage, step, total)
        return None

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
