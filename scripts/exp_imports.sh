# temporary: import costs on the GPU host (fresh processes)
for m in torch torch._dynamo torch._inductor torch._inductor.async_compile torch._inductor.select_algorithm torch._inductor.compile_fx triton; do
  python3 -c "import time; t=time.perf_counter(); import torch; t1=time.perf_counter(); import $m; print('$m', round(t1-t,2), round(time.perf_counter()-t1,2))"
done
