"""The training loop, one engine for the app and the CLI.

``start_training(ws, request)`` is the train verb both clients call: it resolves a
``TrainRequest`` (``training.request``) and makes the Trainer. A ``Trainer`` is made with :meth:`Trainer.new` (checks every input, prepares data if needed,
creates the run folder) or :meth:`Trainer.resume` (reloads a run's latest checkpoint: weights,
optimizer, schedule position, RNG and data position, so the continued run is step-for-step the
run that was never stopped). :meth:`run` trains until the budget is spent or :meth:`stop` is
called; :meth:`pause` holds it between steps. It never touches a UI: every event (a dataclass
of ``training.events``) goes to ``on_event`` and to ``buffer``, which a UI drains a few times per
second; ``step_hooks`` are called after each optimizer step with the trainer (tests and tools
look at the weights and gradients there). Metrics also go to the run's append-only ``metrics.jsonl``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code trains with DistributedDataParallel:
each rank draws its own batches, gradients are averaged, and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from typing import Callable

from workbench.runs import checkpoint
from workbench.config.overrides import train_changes
from workbench.config.schema import Config
from workbench.machine.choices import attention_for, precision_for
from workbench.machine.device import memory_in_use, resolve_device, resolve_precision
from workbench.training.distributed import (all_reduce_mean, any_rank, barrier, broadcast_object, broadcast_run, dist_info, gather_rng, init_distributed, is_lost_peer)
from workbench.errors import WorkbenchError
from workbench.training.evaluate import evaluate
from workbench.training.loggers import Loggers, check_installed, open_loggers
from workbench.training.events import (CheckpointSaved, Evaluated, EventBuffer, Failed, Finished, HealthLogged, Logged, Notice,
                                       Paused, Resumed, Sampled, Started, Stepped, TrainEvent)
from workbench.training.health import HEALTH, HealthMonitor, as_scalars, probe_batch
from workbench.locks import Locked, acquire
from workbench.locks import describe as describe_holder
from workbench.training.optim import lr_at, make_optimizer
from workbench.runs.folder import (SAMPLES, Run, append_jsonl, create_run, default_run_name, get_run, read_jsonl, record_resume, run_config)
from workbench.tokenizer.tokenizer import Tokenizer, tokenizer_info
from workbench.data.tokens import DataInfo, run_data
from workbench.data.prepare import ensure_prepared
from workbench.workspace import Workspace
from workbench import fileio

SAMPLE_COUNT = 2
SAMPLE_TOKENS = 48


class TrainingFailed(WorkbenchError):
    pass


CONTROL = "control.json"


class RunControl:
    """Requests to a training run from other processes: ``request_control(run_dir, "pause")``
    writes ``control.json`` in the run folder, and every rank of the run reads it between steps
    (a stat when nothing changed). Only a change counts: a request left from an earlier process
    is not acted on again."""

    def __init__(self, run_dir):
        self.path = run_dir / CONTROL
        self._seen = self._key()

    def _key(self):
        import os

        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def apply(self, trainer: "Trainer") -> None:
        key = self._key()
        if key == self._seen or key is None:
            return
        self._seen = key
        import json

        try:
            req = json.loads(self.path.read_text(encoding="utf-8")).get("request")
        except (OSError, ValueError, AttributeError):
            return
        {"pause": trainer.pause, "resume": trainer.unpause, "stop": trainer.stop}.get(req, lambda: None)()


def request_control(run_dir, request: str) -> None:
    """Ask the run training in ``run_dir`` (any process, any number of ranks) to pause, resume
    or stop (after the current step, keeping a checkpoint)."""
    if request not in ("pause", "resume", "stop"):
        raise WorkbenchError(f"control request {request!r} is not one of pause, resume, stop")
    fileio.write_json(run_dir / CONTROL, {"request": request, "time": time.time()})


class Trainer:
    def __init__(self, ws: Workspace, run: Run | None, cfg: Config, data: DataInfo, tok: Tokenizer,
                 on_event: Callable[[TrainEvent], None] | None = None, resume_from: str | None = None):
        self.ws, self.run_folder, self.cfg, self.data, self.tok = ws, run, cfg, data, tok
        self.on_event = on_event
        self.buffer = EventBuffer()
        self.resume_from = resume_from
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self.rank, self.local_rank, self.world = dist_info()
        self.state = "ready"
        # what the checkpoint being resumed trained with (precision, attention kernel), so a
        # resumed run computes exactly as before even if this machine's measurements changed
        self.recorded: dict = {}
        self.facts: dict = {}  # resolved choices and their reasons, in status.json and events
        self._lock = None  # the run's lock (rank 0, from setup until run ends)
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0
        self.model = None
        self.health: HealthMonitor | None = None  # rank 0's model-health measurements (setup)
        # called with the trainer after each optimizer step (and its Stepped event), on the
        # training thread: the weights and the step's gradients are there to look at
        self.step_hooks: list[Callable[["Trainer"], None]] = []
        self._resume_record: tuple | None = None  # (checkpoint, step, changes) a resume records once running
        self._notes: list[str] = []  # what a resume has to say once the run starts (Notice events)
        self._peers_lost = False  # under torchrun: a collective failed, another rank is gone
        self.init_from: tuple[str, str] | None = None  # (run, checkpoint) a new run's weights come from
        self._start_facts: dict | None = None
        self.loggers = Loggers()  # the tools rank 0 also sends metrics rows to (train.log_to), opened in _loop

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def new(cls, ws: Workspace, cfg: Config, tokenizer: str, data: str, name: str | None = None,
            text_column: str = "text", on_event=None, prepare_progress=None, plan: dict | None = None,
            init_from: tuple[str, str] | None = None) -> "Trainer":
        """Check every input, prepare data if needed, then create the run folder. Nothing is
        written to trained_models/ unless every check passed."""
        rank, _, world = dist_info()
        tinfo = tokenizer_info(ws, tokenizer)
        tok = Tokenizer.load(tinfo.model_path)
        m = cfg.model
        if m.vocab_size != tok.vocab_size:  # training.request.resolve fits it; a caller that did not is told
            raise WorkbenchError(f"model.vocab_size = {m.vocab_size} does not match tokenizer {tokenizer!r}, "
                                 f"which has {tok.vocab_size} pieces")
        device = resolve_device(cfg.train.device)
        if cfg.train.precision != "auto":  # refuse a format this device lacks before any work (auto always has one)
            resolve_precision(cfg.train.precision, device)
        check_installed(cfg.train.log_to)
        if name is not None:
            from workbench.workspace import check_name

            check_name("run", name)
            if ws.run_path(name).exists():
                raise WorkbenchError(f"run {name!r} already exists; choose another --name or --resume {name}")
        if init_from is not None:  # the weights must fit this model before anything is written
            checkpoint.check_fits(m, ws.run_path(init_from[0]), init_from[1])
        if rank == 0:
            dinfo = ensure_prepared(ws, tokenizer, data, text_column, progress=prepare_progress)
        barrier(world)
        if rank != 0:
            dinfo = ensure_prepared(ws, tokenizer, data, text_column)
        dinfo.check_ids(m.vocab_size)  # data reused from an earlier prepare may since have been damaged
        for split in ("train", "val"):
            tf = dinfo.split(split)
            if len(tf) < m.max_seq_len + 1:
                raise WorkbenchError(
                    f"the {split} data holds {len(tf)} tokens, fewer than one window of model.max_seq_len + 1 = "
                    f"{m.max_seq_len + 1}; use more data or a smaller --set model.max_seq_len"
                )
        run = None
        if rank == 0:
            run_name = name or default_run_name(ws, cfg)
            data_meta = {"name": dinfo.name, "source": data, "text_column": text_column,
                         "tokenizer": tokenizer, "tokenizer_sha256": tok.sha256,
                         "fingerprint": dinfo.meta["source"].get("fingerprint"),
                         "train_tokens": dinfo.meta["splits"]["train"]["tokens"]}
            extra = {"plan": plan} if plan else {}
            if init_from is not None:
                extra["init_from"] = {"run": init_from[0], "checkpoint": init_from[1]}
            run = create_run(ws, run_name, cfg, tinfo.path, data_meta, extra or None)
        run = broadcast_run(ws, run, world)
        trainer = cls(ws, run, cfg, dinfo, tok, on_event)
        trainer.init_from = init_from
        return trainer

    @classmethod
    def resume(cls, ws: Workspace, run_name: str, train_overrides: dict | None = None, on_event=None) -> "Trainer":
        run = get_run(ws, run_name)
        held = run.trainer()
        if held is not None and dist_info()[0] == 0:
            raise Locked(f"run {run_name!r} is already training in {describe_holder(held)}; stop it first, "
                         "or resume it when it has stopped")
        cfg, changes = train_changes(run_config(run), train_overrides or {})
        check_installed(cfg.train.log_to)
        notes: list[str] = []
        # the newest whole checkpoint with finite weights (fail now, naming the file, if none is)
        latest = checkpoint.resumable(run.path, say=notes.append)
        tok = run.load_tokenizer()
        dinfo = run_data(ws, run_name, run.raw_config().get("data") or {}, tok.sha256)
        dinfo.check_ids(cfg.model.vocab_size)
        trainer = cls(ws, run, cfg, dinfo, tok, on_event, resume_from=latest)
        changes = {f"train.{k}": v for k, v in changes.items()}
        if latest is None:  # it ended before its first checkpoint: nothing to keep, start it again
            notes.append(f"run {run_name!r} has no checkpoint (it ended before its first one); "
                         "starting it again from step 0")
            trainer._resume_record = (None, 0, changes)
            origin = run.raw_config().get("init_from")
            if isinstance(origin, dict) and origin.get("run") and origin.get("checkpoint"):
                trainer.init_from = (str(origin["run"]), str(origin["checkpoint"]))  # from those weights again
        else:
            st = checkpoint.load_state(run.path, latest)
            trainer.recorded = {k: st[k] for k in ("precision", "attention") if isinstance(st.get(k), str)}
            trainer._resume_record = (latest, int(st["step"]), changes)
        trainer._notes = notes
        return trainer

    # --- control (from any thread) -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """A stop was asked for (the run ends after the current step)."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._unpaused.set()

    def pause(self) -> None:
        self._unpaused.clear()

    def unpause(self) -> None:
        self._unpaused.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def emit(self, ev: TrainEvent) -> None:
        self.buffer.put(ev)
        if self.on_event is not None:
            self.on_event(ev)

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Build model and optimizer on the device (and restore them when resuming)."""
        import numpy as np
        import torch

        from workbench.model import build_model

        tc, mc = self.cfg.train, self.cfg.model
        if self.rank == 0 and self._lock is None:  # one trainer per run, in any process
            self._lock = acquire(self.run_folder.lock_path(), "training", f"run {self.run_folder.name!r}")
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        self.device = resolve_device(tc.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        self.precision, attention = self._choose_kernels()
        torch.manual_seed(tc.seed)
        self.raw_model = build_model(mc, device=self.device, seed=tc.seed)
        self.raw_model.set_attention_kernel(attention)
        if self.init_from is not None and not self.resume_from:
            checkpoint.load_weights(self.raw_model, self.ws.run_path(self.init_from[0]), self.init_from[1])
        self.optimizer = make_optimizer(self.raw_model, tc, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.use_scaler else None
        self.np_rng = np.random.default_rng([tc.seed, self.rank])
        self.best_val = math.inf
        if self.resume_from:
            self._restore(self.resume_from)
        elif self._resume_record and self.rank == 0:  # started again: the dead attempt's rows go
            self._drop_rows_after(-1)
        self.model = self.raw_model
        if tc.compile:
            self.model = self._try_compile(self.raw_model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)
        self.model.train()
        if self.rank == 0 and tc.health_interval:  # rank 0 measures the model it holds
            idx = probe_batch(self.data, mc.max_seq_len).to(self.device)
            self.health = HealthMonitor(self.raw_model, tc.health_interval, idx,
                                        lambda: self.precision.autocast(self.device))

    def _choose_kernels(self):
        """Precision and attention kernel: recorded ones when resuming with ``auto``, else
        measured on this machine (rank 0 decides for all ranks)."""
        tc, mc = self.cfg.train, self.cfg.model
        choice = None
        if self.rank == 0:
            rec = self.recorded
            say = lambda text: self.emit(Notice(step=self.step, text=text))  # noqa: E731
            if tc.precision == "auto" and rec.get("precision"):
                name, why = rec["precision"], "auto; as the run trained so far"
            else:
                name, why = precision_for(tc.precision, self.device, measure=True, say=say)
            if rec.get("attention"):
                kernel, kwhy = rec["attention"], "as the run trained so far"
            else:
                kernel, kwhy = attention_for(mc, tc.batch_size, name, self.device.type, measure=True, say=say)
            choice = {"precision": name, "precision_reason": why, "attention": kernel, "attention_reason": kwhy}
        choice = broadcast_object(choice, self.world)
        self.facts = choice
        precision = resolve_precision(choice["precision"], self.device, choice["precision_reason"])
        return precision, choice["attention"]

    def _try_compile(self, model):
        """``torch.compile`` the model, compiled now with one forward and backward at the
        training shape (zeros, the RNG untouched, gradients dropped) so a platform that cannot
        compile falls back here, with a message, instead of failing at the first step."""
        import torch

        tc, mc = self.cfg.train, self.cfg.model
        try:
            compiled = torch.compile(model)
            x = torch.zeros(tc.batch_size, mc.max_seq_len, dtype=torch.long, device=self.device)
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                with self.precision.autocast(self.device):
                    loss = compiled(x, targets=x)
                loss.backward()
            model.zero_grad(set_to_none=True)
            self.facts["compile_seconds"] = round(time.perf_counter() - t0, 2)
            return compiled
        except Exception as e:  # compile support varies by platform; training goes on without it
            model.zero_grad(set_to_none=True)
            self.emit(Notice(step=self.step, text=f"torch.compile is not available here ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:120] if str(e) else ''}); training without it"))
            return model

    def _restore(self, name: str) -> None:
        import torch

        checkpoint.load_weights(self.raw_model, self.run_folder.path, name)
        st = checkpoint.load_state(self.run_folder.path, name)
        try:
            self.optimizer.load_state_dict(st["optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise WorkbenchError(f"checkpoint file {self.run_folder.path / 'checkpoints' / name / 'state.pt'} holds "
                                 f"optimizer state for another model ({str(e).splitlines()[0][:120]})") from None
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.step, self.tokens, self.elapsed = st["step"], st["tokens"], st["elapsed"]
        self.best_val = st.get("best_val", math.inf)
        torch.set_rng_state(st["torch_rng"])
        if self.device.type == "cuda" and st.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        rng_states = st["data_rng"]
        self.np_rng.bit_generator.state = rng_states[self.rank] if self.rank < len(rng_states) else rng_states[0]
        if self.rank == 0:
            self._drop_rows_after(self.step)

    def _drop_rows_after(self, step: int) -> None:
        """Steps logged after ``step`` are redone: drop them so the log stays one history."""
        for fname in ("metrics.jsonl", SAMPLES, HEALTH):
            path = self.run_folder.path / fname
            rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
            fileio.write_text(path, "".join(_dumps(r) + "\n" for r in rows))

    # --- the loop ------------------------------------------------------------------------------

    def _schedule_progress(self) -> float:
        """How far the learning-rate schedule is (past warmup), which a budget in minutes only knows at run time."""
        tc = self.cfg.train
        fr = [0.0]
        if tc.max_steps:
            fr.append((self.step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))
        if tc.max_tokens:
            fr.append(self.tokens / tc.max_tokens)
        if tc.max_minutes:
            fr.append(self.elapsed / (tc.max_minutes * 60))
        return max(fr)

    def progress(self) -> float:
        """The share of the budget (steps, tokens or minutes, whichever is furthest) spent, 0 to 1."""
        tc = self.cfg.train
        fr = [0.0]
        if tc.max_steps:
            fr.append(self.step / tc.max_steps)
        if tc.max_tokens:
            fr.append(self.tokens / tc.max_tokens)
        if tc.max_minutes:
            fr.append(self.elapsed / (tc.max_minutes * 60))
        return min(1.0, max(fr))

    def _budget_spent(self) -> bool:
        return self.progress() >= 1.0

    def run(self) -> dict:
        """Train until the budget is spent, stop() is called, or something fails. Returns a
        summary dict with ``state`` finished, stopped or failed."""
        try:
            for text in self._notes if self.rank == 0 else ():
                self.emit(Notice(step=self.step, text=text))
            self._notes = []
            if self.model is None:
                self.setup()
            return self._loop()
        except Locked as e:  # someone else's run: leave its status alone
            self.state = "failed"
            self.emit(Failed(step=self.step, message=str(e)))
            return {"state": "failed", "run": self.run_folder.name, "step": self.step, "message": str(e),
                    "checkpoint": None}
        except TrainingFailed as e:
            return self._fail(str(e))
        except WorkbenchError as e:
            return self._fail(str(e))
        except OSError as e:  # a full disk, a lost mount, a read-only folder: one line, run failed
            where = f" {e.filename}" if e.filename else ""
            kept = self.run_folder.latest_checkpoint() if self.run_folder else None
            return self._fail(f"cannot write{where}: {e.strerror or e}; "
                              + (f"the last good checkpoint ({kept}) is kept" if kept else "no checkpoint was written"))
        except (Exception, MemoryError) as e:
            if _is_oom(e):
                return self._fail(self._oom_message())
            if self.world > 1 and is_lost_peer(e):
                self._peers_lost = True  # no last barrier: nobody would meet this rank there
                kept = self.run_folder.latest_checkpoint() if self.run_folder else None
                first = re.sub(r"^\[[^\]]*\] ", "", str(e).splitlines()[0] if str(e) else type(e).__name__)
                first = first.split(". This is typically")[0][:160]  # gloo's source line and advice go
                return self._fail(
                    f"lost contact with the other training processes at step {self.step} ({first}); "
                    + (f"the last checkpoint ({kept}) is kept: start the run again with --resume "
                       f"{self.run_folder.name} on every node" if kept else "no checkpoint had been written yet"))
            raise
        finally:
            self.loggers.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if self.world > 1:
                import torch.distributed as dist

                if dist.is_initialized() and not self._peers_lost:
                    # Without a last barrier one rank could leave while the other still waits on
                    # the final collective (gloo then aborts it). The group is not torn down
                    # here: `workbench train` ends a torchrun worker with os._exit after this
                    # (gloo's teardown aborted a finished rank, "terminate called without an
                    # active exception", in 2 of 6 CI runs).
                    dist.barrier()

    def _loop(self) -> dict:
        import torch

        tc, mc = self.cfg.train, self.cfg.model
        B, T, accum = tc.batch_size, mc.max_seq_len, tc.grad_accum
        step_tokens = B * T * accum * self.world
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        writer = self.rank == 0
        # what the start event says, kept in status.json too (a run followed from outside,
        # such as the app's torchrun child, reads it there)
        self._start_facts = {"params": self.raw_model.num_params(), "device": str(self.device), "world": self.world,
                             "resumed_from": self.resume_from, "tokens_per_step": step_tokens,
                             "data": self.data.name}
        if writer:
            self._set_status("running", step=self.step)
        self.emit(Started(step=self.step, run=self.run_folder.name, precision=self.precision.name,
                          precision_reason=self.precision.reason, attention=self.facts.get("attention"),
                          attention_reason=self.facts.get("attention_reason"), **self._start_facts))
        last_ckpt_step = last_eval_step = self.step if self.resume_from else None
        win_loss, win_n, win_t0, win_tokens = 0.0, 0, time.perf_counter(), 0
        t_last = time.perf_counter()
        reason = "budget"
        if writer and self._resume_record:
            record_resume(self.run_folder, self.cfg, *self._resume_record)
            self._resume_record = None
        self._control = RunControl(self.run_folder.path)
        if writer and tc.log_to:
            self.loggers = open_loggers(tc.log_to, self.run_folder, self.cfg.to_dict(),
                                        say=lambda text: self.emit(Notice(step=self.step, text=text)))
        if self.init_from is not None and self.step == 0:  # where the origin's weights stand on this data
            self._evaluate()
            last_eval_step = 0
        while True:
            self._control.apply(self)  # a pause/resume/stop asked from another process
            # Under DDP every rank must leave the loop at the same step, or the next collective
            # hangs: stop, budget (a wall-clock budget differs per rank) and pause are agreed
            # each step, so every rank pauses and stops at the same step.
            stop_now, done, pause = self._agreed(self._stop.is_set(), self._budget_spent(),
                                                 not self._unpaused.is_set())
            if done:
                break
            if stop_now:
                reason = "stopped"
                break
            if pause:
                self._unpaused.clear()
                if writer:
                    self._set_status("paused", step=self.step)
                self.emit(Paused(step=self.step))
                while not self._unpaused.wait(0.2):
                    self._control.apply(self)
                t_last = win_t0 = time.perf_counter()
                win_loss, win_n, win_tokens = 0.0, 0, 0
                if writer:
                    self._set_status("running", step=self.step)
                if not self._stop.is_set():
                    self.emit(Resumed(step=self.step))
                continue
            lr = lr_at(tc, self.step, self._schedule_progress())
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in range(accum):
                batch = torch.from_numpy(self.data.train.sample_batch(B, T, self.np_rng)).to(self.device, non_blocking=True)
                x, y = batch[:, :-1], batch[:, 1:]
                sync = contextlib.nullcontext()
                if self.world > 1 and micro < accum - 1:
                    sync = self.model.no_sync()
                with sync:
                    with self.precision.autocast(self.device):
                        loss = self.model(x, targets=y) / accum  # the fused head + loss
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                loss_sum += loss.item()
            if self.world > 1:
                loss_sum = all_reduce_mean(loss_sum, self.device)
            if not math.isfinite(loss_sum):
                raise TrainingFailed(self._nan_message("loss", loss_sum))
            if self.scaler:
                for opt in self.optimizer.optimizers:
                    self.scaler.unscale_(opt)
            health = self.health if self.health is not None and self.health.due(self.step + 1) else None
            if health is not None:
                health.before_step()
            gnorm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf")).item()
            if not math.isfinite(gnorm) and self.scaler is None:
                raise TrainingFailed(self._nan_message("gradient norm", gnorm))
            if self.scaler:
                for opt in self.optimizer.optimizers:
                    self.scaler.step(opt)
                self.scaler.update()
            else:
                self.optimizer.step()
            now = time.perf_counter()
            self.elapsed += now - t_last
            t_last = now
            self.step += 1
            self.tokens += step_tokens
            win_loss += loss_sum
            win_n += 1
            win_tokens += step_tokens
            self.emit(Stepped(step=self.step, loss=loss_sum, lr=lr, tokens=self.tokens, grad_norm=gnorm, elapsed=self.elapsed))
            if health is not None:
                hrow = health.after_step(self.step, self.tokens, lr)
                append_jsonl(self.run_folder.path / HEALTH, hrow)
                self.loggers.write(as_scalars(hrow))
                self.emit(HealthLogged(step=self.step, row=hrow))
            for hook in self.step_hooks:
                hook(self)
            if self.step % tc.log_interval == 0:
                dt = max(1e-9, now - win_t0)
                row = {"kind": "train", "step": self.step, "tokens": self.tokens, "loss": win_loss / win_n,
                       "lr": lr, "grad_norm": gnorm, "tok_s": win_tokens / dt, "elapsed": round(self.elapsed, 3),
                       "mem": memory_in_use(self.device), "progress": self.progress()}
                if writer:
                    append_jsonl(self.run_folder.path / "metrics.jsonl", row)
                    self.loggers.write(row)
                self.emit(Logged(step=self.step, row=row))
                win_loss, win_n, win_tokens, win_t0 = 0.0, 0, 0, time.perf_counter()
            if self.step % tc.eval_interval == 0:
                self._evaluate()
                last_eval_step, t_last = self.step, time.perf_counter()
            if self.step % tc.checkpoint_interval == 0:
                self._checkpoint()
                last_ckpt_step, t_last = self.step, time.perf_counter()
        if reason == "budget" and last_eval_step != self.step:
            self._evaluate()
        if last_ckpt_step != self.step:
            self._checkpoint()
        state = "finished" if reason == "budget" else "stopped"
        if writer:
            self._set_status(state, step=self.step, tokens=self.tokens)
        summary = {"state": state, "run": self.run_folder.name, "step": self.step, "tokens": self.tokens,
                   "elapsed": self.elapsed, "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                   "checkpoint": self.run_folder.latest_checkpoint()}
        self.emit(Finished(step=self.step, state=state, run=self.run_folder.name,
                           checkpoint=summary["checkpoint"], summary=summary))
        self.state = state
        return summary

    def _set_status(self, state: str, **extra) -> None:
        start = self._start_facts
        self.run_folder.set_status(state, **self.facts, **({"start": start} if start else {}), **extra)

    def _agreed(self, *flags: bool) -> tuple[bool, ...]:
        return flags if self.world <= 1 else any_rank(flags, self.device)

    def _nan_message(self, what: str, value: float) -> str:
        latest = self.run_folder.latest_checkpoint()
        kept = f"the last good checkpoint ({latest}) is kept" if latest else "no checkpoint had been written yet"
        return (f"training stopped: the {what} became {value} at step {self.step + 1}; {kept}. "
                "Try a lower train.lr, more train.warmup_steps or train.grad_clip")

    def _oom_message(self) -> str:
        from workbench.machine.estimate import fmt_bytes, training_memory

        tc, mc = self.cfg.train, self.cfg.model
        kept = self.run_folder.latest_checkpoint() if self.run_folder else None
        try:
            precision, device = getattr(self, "precision", None), getattr(self, "device", None)
            peak = training_memory(mc, tc.batch_size, None, precision.name if precision else tc.precision,
                                   device.type if device is not None else "cpu", tc.optimizer).total
            expected = f"; the estimate expected a peak of {fmt_bytes(peak)}"
        except Exception:  # the estimate is advice here, never a second failure
            expected = ""
        return (f"out of memory on {getattr(self, 'device', 'cpu')} at train.batch_size = {tc.batch_size}, model.max_seq_len = "
                f"{mc.max_seq_len}, {mc.n_params:,} parameters{expected}. Lower train.batch_size (raise "
                f"train.grad_accum to keep the tokens per step), model.max_seq_len or the model size; "
                + (f"the last checkpoint ({kept}) is kept" if kept else "no checkpoint had been written yet"))

    def _fail(self, message: str) -> dict:
        self.state = "failed"
        if self.rank == 0 and self.run_folder is not None:
            try:
                self._set_status("failed", step=self.step, message=message)
            except OSError:
                pass  # a full disk: the released lock still tells that nothing trains it
        self.emit(Failed(step=self.step, message=message))
        return {"state": "failed", "run": self.run_folder.name if self.run_folder else None,
                "step": self.step, "message": message, "checkpoint": self.run_folder.latest_checkpoint() if self.run_folder else None}

    def _evaluate(self) -> None:
        if self.rank != 0:
            return
        tc, mc = self.cfg.train, self.cfg.model
        m = evaluate(self.raw_model, self.data.val, tc.batch_size, mc.max_seq_len, tc.eval_batches,
                     self.data.bytes_per_token("val"), self.device, self.precision)
        self.best_val = min(self.best_val, m["val_loss"])
        row = {"kind": "eval", "step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed, 3), **m}
        append_jsonl(self.run_folder.path / "metrics.jsonl", row)
        self.loggers.write(row)
        self.emit(Evaluated(step=self.step, row=row))
        texts = self._samples()
        for t in texts:  # sampled from the fp32 master weights
            append_jsonl(self.run_folder.path / SAMPLES,
                         {"step": self.step, "tokens": self.tokens, "text": t, "precision": "fp32"})
        self.emit(Sampled(step=self.step, texts=texts, precision="fp32"))

    def _samples(self) -> list[str]:
        """A few continuations from BOS with their own RNG, so training randomness is untouched."""
        import torch

        from workbench.generation.generate import generate
        from workbench.generation.sampling import SamplingParams

        model = self.raw_model
        was = model.training
        model.eval()
        g = torch.Generator(device="cpu").manual_seed(self.cfg.train.seed * 1_000_003 + self.step)
        n_new = min(SAMPLE_TOKENS, self.cfg.model.max_seq_len - 1)
        params = SamplingParams(max_tokens=n_new, temperature=0.8, top_k=40, alternatives=0)
        try:
            return [generate(model, self.tok, "", params, generator=g).text for _ in range(SAMPLE_COUNT)]
        finally:
            model.train(was)

    def _checkpoint(self) -> None:
        import torch

        # never write (or point `latest` at) weights that are no longer finite: every rank checks
        # its own copy (they are equal under DDP), so all ranks stop together
        bad = next((n for n, p in self.raw_model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            kept = self.run_folder.latest_checkpoint()
            raise TrainingFailed(
                f"training stopped: the weights became non-finite ({bad}) by step {self.step}, so no checkpoint "
                f"was written for it; " + (f"the last good checkpoint ({kept}) is kept" if kept else
                                           "no checkpoint had been written yet")
                + ". Try a lower train.lr, more train.warmup_steps or train.grad_clip")
        if self.rank == 0:
            st = {
                "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed, "best_val": self.best_val,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "data_rng": gather_rng(self.np_rng, self.world),
                "precision": self.precision.name, "attention": self.facts.get("attention"),
            }
            name = checkpoint.save_checkpoint(self.run_folder.path, self.step, self.raw_model, st, self.cfg.train.keep_last)
            self._set_status("running", step=self.step)
            self.emit(CheckpointSaved(step=self.step, name=name))
        elif self.world > 1:
            gather_rng(self.np_rng, self.world)
        barrier(self.world)


def start_training(ws: Workspace, req, resolved=None, on_event=None, prepare_progress=None,
                   say: Callable[[str], None] | None = None) -> Trainer:
    """The train verb: a ready Trainer for ``req`` (a ``TrainRequest``), new or resumed; call
    ``run()`` on it. ``resolved`` is ``training.request.resolve``'s answer when the caller already
    has it (to show the plan first); ``say`` hears the planner and the notices."""
    from workbench.training.request import resolve

    res = resolved if resolved is not None else resolve(ws, req, say=say)
    if resolved is None and say is not None:
        for notice in res.notices:
            say(notice)
    if req.resume is not None:
        return Trainer.resume(ws, req.resume, res.train_overrides or None, on_event=on_event)
    return Trainer.new(ws, res.config, res.tokenizer or req.tokenizer, req.data, name=req.name,
                       text_column=req.text_column, on_event=on_event, prepare_progress=prepare_progress,
                       plan=res.plan.record() if res.plan is not None else None, init_from=res.init_from)


def _is_oom(e: BaseException) -> bool:
    """Whether ``e`` is the allocator failing: CUDA's OutOfMemoryError, Python's MemoryError, or
    the CPU allocator's RuntimeError ("can't allocate memory", as under `ulimit -v`)."""
    import torch

    text = str(e).lower()
    return (isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text)


def _dumps(r: dict) -> str:
    import json

    return json.dumps(r)


__all__ = ["Trainer", "TrainingFailed", "init_distributed", "start_training"]
