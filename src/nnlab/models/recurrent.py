"""Recurrent forecasters: the notebook's hand-written RNN cell, torch's RNN, LSTM and GRU, and an
encoder-decoder (the notebook's "Seq2Seq" future item).

`forecaster(cell=...)` builds one; `model.cell` in conf/model/recurrent.yaml chooses.
"""

from __future__ import annotations

import torch
from torch import nn

from nnlab.checks import BadValue, check_choice, check_int

CELLS = ("scratch", "rnn", "lstm", "gru", "seq2seq")
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class ScratchRNN(nn.Module):
    """The notebook's cell, h_t = act(W_hx x_t + W_hh h_{t-1} + b_h), vectorised over a batch.

    The notebook looped over one series at a time with (hidden, 1) column vectors; here a batch
    of windows (batch, time, inputs) goes through at once, one time step per loop. Kaiming-
    uniform weights and zero biases, as the notebook initialises them. Returns every h_t,
    (batch, time, hidden), like torch's nn.RNN with batch_first=True.
    """

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__()
        self.activation = ACTIVATIONS[check_choice("activation", activation, ACTIVATIONS)]
        self.w_hx = nn.Parameter(torch.empty(hidden_size, input_size))
        self.w_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b_h = nn.Parameter(torch.zeros(hidden_size))
        nn.init.kaiming_uniform_(self.w_hx)
        nn.init.kaiming_uniform_(self.w_hh)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = inputs.new_zeros(inputs.shape[0], self.w_hh.shape[0])
        driven = inputs @ self.w_hx.T + self.b_h  # the input's share of every step, at once
        states = []
        for step in range(inputs.shape[1]):
            hidden = self.activation(driven[:, step] + hidden @ self.w_hh.T)
            states.append(hidden)
        return torch.stack(states, dim=1)


class StepForecaster(nn.Module):
    """A recurrent layer and a linear read-out y_t = W_yh h_t + b_y at every step.

    forward: (batch, window, 1) -> (batch, window), each step's prediction of the value `lag`
    steps later. Trained on every step with the true inputs (teacher forcing); a forecast
    uses the last step.
    """

    def __init__(self, cell: str, hidden_size: int, num_layers: int, activation: str) -> None:
        super().__init__()
        if cell == "scratch":
            self.recurrent: nn.Module = ScratchRNN(1, hidden_size, activation)
        elif cell == "rnn":
            self.recurrent = nn.RNN(
                1, hidden_size, num_layers, nonlinearity=activation, batch_first=True
            )
        else:
            layer = nn.LSTM if cell == "lstm" else nn.GRU
            self.recurrent = layer(1, hidden_size, num_layers, batch_first=True)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        states = self.recurrent(inputs)
        states = states[0] if isinstance(states, tuple) else states  # torch's layers add h_n
        return self.readout(states).squeeze(-1)


class Seq2Seq(nn.Module):
    """A GRU encoder reads the window; a GRU decoder, started from its state, emits `horizon`
    values, each fed back as the next step's input.

    forward(inputs, teacher): (batch, window, 1) -> (batch, horizon). With `teacher` (the true
    values, (batch, horizon)) the decoder is fed those instead of its own outputs: teacher
    forcing, for training.
    """

    def __init__(self, hidden_size: int, num_layers: int, horizon: int) -> None:
        super().__init__()
        self.horizon = horizon
        self.encoder = nn.GRU(1, hidden_size, num_layers, batch_first=True)
        self.decoder = nn.GRU(1, hidden_size, num_layers, batch_first=True)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, inputs: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        _, state = self.encoder(inputs)
        previous = inputs[:, -1:, :]  # the last known value starts the decoder
        outputs = []
        for step in range(self.horizon):
            decoded, state = self.decoder(previous, state)
            value = self.readout(decoded)  # (batch, 1, 1)
            outputs.append(value[:, 0, 0])
            previous = value if teacher is None else teacher[:, step, None, None]
        return torch.stack(outputs, dim=1)


def forecaster(
    cell: str = "gru",
    hidden_size: int = 32,
    num_layers: int = 1,
    activation: str = "tanh",
    horizon: int = 1,
) -> nn.Module:
    """The forecaster `cell` names: scratch, rnn, lstm, gru (one step) or seq2seq (`horizon`)."""
    check_choice("cell", cell, CELLS)
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("num_layers", num_layers, minimum=1)
    check_choice("activation", activation, ACTIVATIONS)
    check_int("horizon", horizon, minimum=1)
    if cell == "scratch" and num_layers != 1:
        raise BadValue(
            "num_layers", num_layers, "the scratch cell has one layer; cell=rnn stacks them"
        )
    if cell == "seq2seq":
        return Seq2Seq(hidden_size, num_layers, horizon)
    return StepForecaster(cell, hidden_size, num_layers, activation)
