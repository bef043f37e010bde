import errno, time
def w(p):
  try:
    open(p, 'wb').close(); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
print('v1', w('/dev/urandom'), w('/dev/zero'))
open('/workspace/ready', 'w').close()
leaks = tries = 0
deadline = time.time() + 30
while time.time() < deadline:
  tries += 1
  if w('/dev/zero') == 'ok': leaks += 1
  if w('/dev/urandom') == 'ok': break
print('v2', w('/dev/urandom'), w('/dev/zero'))
print('leaks', leaks, 'tries', 'many' if tries > 1 else tries)
