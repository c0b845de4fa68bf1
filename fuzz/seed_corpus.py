"""Write each spec vector's bytes into fuzz/corpus/<target>/ as a seed input."""
import os, pathlib
here = pathlib.Path(__file__).parent
targets = {"payload.txt": "wire_payload", "query.txt": "wire_query", "sumuc.txt": "wire_sumuc",
           "snapshot.txt": "wire_snapshot", "control.txt": "wire_control", "mps.txt": "wire_mps",
           "history.txt": "wire_history", "dtls.txt": "wire_dtls"}
for fname, target in targets.items():
    src = here.parent / "spec" / "vectors" / fname
    if not src.exists():
        continue
    out = here / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    n, hexs = 0, []
    for line in src.read_text().splitlines() + [""]:
        if line.startswith("hex:"):
            hexs.append(line[4:].strip())
        elif not line.strip() and hexs:
            (out / f"vector-{n:03}").write_bytes(bytes.fromhex("".join(hexs)))
            n, hexs = n + 1, []
