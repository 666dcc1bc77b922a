# Panic call sites of a firmware ELF, grouped by the innermost project source line (docs/robustness.md).
import subprocess,collections,sys
F=sys.argv[1]
ROOT=sys.argv[2] if len(sys.argv) > 2 else '/tmp/ci-final/'
sites=[l.split(' ',1) for l in open('sites.txt').read().splitlines()]
out=subprocess.run(['llvm-symbolizer-14','--obj='+F],input='\n'.join(a for a,_ in sites)+'\n',capture_output=True,text=True).stdout
blocks=out.strip('\n').split('\n\n')
c=collections.Counter()
for (addr,kind),b in zip(sites,blocks):
    lines=b.splitlines()
    frames=[(lines[i],lines[i+1]) for i in range(0,len(lines)-1,2)]
    proj=[f for f in frames if ROOT in f[1]]
    if proj:
        fn,loc=proj[0]
        loc=loc.replace(ROOT,'')
        c[(loc.rsplit(':',1)[0], kind.strip('<>').split('::')[-1])]+=1
    else:
        c[('(std/deps) '+frames[-1][0].split('::h')[0][:60], kind.strip('<>').split('::')[-1])]+=1
for (loc,kind),n in sorted(c.items()):
    print(n,loc,kind)
# Usage (from /tmp or any folder):
#   llvm-objdump -d -C --no-show-raw-insn ELF > fw.dis
#   awk '/\tb(l|\.w)?\t.*<(core::panicking::[a-z_:]+|core::slice::index::[a-z_]+|core::option::unwrap_failed|core::result::unwrap_failed|core::option::expect_failed|core::slice::copy_from_slice_impl::len_mismatch_fail|core::str::slice_error_fail)>/{a=$1; sub(":","",a); match($0,/<[^>]*>/); print "0x" a, substr($0,RSTART,RLENGTH)}' fw.dis > sites.txt
#   python3 panic_sites.py ELF     (project frames are those under the checkout's path: edit ROOT)
