"""A connection that drops in the middle: `python cut_connection.py BYTES ssh ...` runs the ssh
command, passes it the first BYTES of standard input, then kills it (SIGKILL, as a lost link or
a dead laptop would) and exits 255 as ssh does when its connection goes."""
import subprocess
import sys
import time

limit, argv = int(sys.argv[1]), sys.argv[2:]
proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
sent = 0
while chunk := sys.stdin.buffer.read1(1 << 16):
    if sent + len(chunk) >= limit:
        proc.stdin.write(chunk[:limit - sent])
        proc.stdin.flush()
        time.sleep(0.5)  # the device is unpacking the part it got
        proc.kill()
        sys.exit(255)
    proc.stdin.write(chunk)
    sent += len(chunk)
proc.stdin.close()
sys.exit(proc.wait())
