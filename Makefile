# flowerbed: every target creates .venv itself from a bare Python 3.11/3.12.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNS   ?= runs

.PHONY: install demo test bench clean leaderboard

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing flowerbed and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -e ".[test]" >> $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# FedLabel vs FedAvg with 10% of the labels (and FedAvg with all of them) on embedded digits, 10 clients,
# Dirichlet(0.5), 30 rounds (experiment=demo; about 3 minutes on 2 cores).
DEMO := $(RUNS)/demo
demo: $(STAMP)
	$(BIN)/flowerbed partitions experiment=demo --out $(DEMO)/partitions.png
	$(BIN)/flowerbed run experiment=demo algorithm=fedlabel output.dir=$(DEMO)/fedlabel overwrite=true
	$(BIN)/flowerbed run experiment=demo algorithm=fedavg output.dir=$(DEMO)/fedavg-labeled-only overwrite=true
	$(BIN)/flowerbed run experiment=demo algorithm=fedavg partition.labeled_fraction=1.0 output.dir=$(DEMO)/fedavg-all-labels overwrite=true
	$(BIN)/flowerbed report $(DEMO)/fedlabel $(DEMO)/fedavg-labeled-only $(DEMO)/fedavg-all-labels --one-panel --out $(DEMO)/report
	@echo "results: $(DEMO)/{fedlabel,fedavg-labeled-only,fedavg-all-labels} (metrics.jsonl, summary.json); partition heat map: $(DEMO)/partitions.png; report: $(DEMO)/report/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the benchmark workloads -> $(RUNS)/bench/bench.md, the tables of docs/results/bench.md (~40 min on 2 cores):
# framework ms per client call and B2 on every engine (medians of 3, pfl-research too if installed), profiles
# of a B2 round and of a B1-shaped round, B3 at 1k/10k/100k clients. On a GPU: make bench B1="--rounds 200".
B1 ?= --rounds 20 --engines sequential,batched
bench: $(STAMP)
	$(BIN)/flowerbed bench calls b2 --repeats 3 --profile --out $(RUNS)/bench/b2
	$(BIN)/flowerbed bench b1 $(B1) --profile --out $(RUNS)/bench/b1
	$(BIN)/flowerbed bench b3 --out $(RUNS)/bench/b3
	cat $(RUNS)/bench/b2/bench.md $(RUNS)/bench/b1/bench.md $(RUNS)/bench/b3/bench.md > $(RUNS)/bench/bench.md
	@echo "tables: $(RUNS)/bench/bench.md"

# Every algorithm that applies on digits, 5 partition settings x 2 seeds, 20 local steps each per round -> docs/results/leaderboard.md (~30 min on 2 cores).
LEADERBOARD ?= --seeds 0,1 --rounds 10 --steps 20
leaderboard: $(STAMP)
	$(BIN)/python -m flowerbed.experiments.leaderboard $(LEADERBOARD) --dir $(RUNS)/leaderboard --out docs/results

clean:
	rm -rf $(VENV) $(RUNS)
