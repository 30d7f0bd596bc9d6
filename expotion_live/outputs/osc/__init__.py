"""OSC: the targets (`targets`), the address schema (`schema`), the sender and the session feed that
drives it (`sender`, `feed`), and the control port that takes OSC in (`control`)."""
