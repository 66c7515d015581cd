set terminal pngcairo size 1400,1260 font ',9'
set output 'throughput.png'
set multiplot layout 3,1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set logscale y
set ylabel 'calls/s (log)'
set xtics rotate by -30
set key outside right top
set datafile missing '?'
set grid ytics
set title 'redis-server (resp, ECHO)'
plot 'throughput-redis.dat' using 2:xtic(1) title columnheader(2) lc rgb '#555555' , 'throughput-redis.dat' using 3:xtic(1) title columnheader(3) lc rgb '#1f77b4' , 'throughput-redis.dat' using 4:xtic(1) title columnheader(4) lc rgb '#d62728' , 'throughput-redis.dat' using 5:xtic(1) title columnheader(5) lc rgb '#2ca02c' , 'throughput-redis.dat' using 6:xtic(1) title columnheader(6) lc rgb '#95cf95' , 'throughput-redis.dat' using 7:xtic(1) title columnheader(7) lc rgb '#9467bd' , 'throughput-redis.dat' using 8:xtic(1) title columnheader(8) lc rgb '#c9b3de' , 'throughput-redis.dat' using 9:xtic(1) title columnheader(9) lc rgb '#8c564b' , 'throughput-redis.dat' using 10:xtic(1) title columnheader(10) lc rgb '#ff7f0e' , 'throughput-redis.dat' using 11:xtic(1) title columnheader(11) lc rgb '#ffbf86' , 'throughput-redis.dat' using 12:xtic(1) title columnheader(12) lc rgb '#ffbb78' , 'throughput-redis.dat' using 13:xtic(1) title columnheader(13) lc rgb '#bcbd22' , 'throughput-redis.dat' using 14:xtic(1) title columnheader(14) lc rgb '#ddde90' , 'throughput-redis.dat' using 15:xtic(1) title columnheader(15) lc rgb '#e377c2' , 'throughput-redis.dat' using 16:xtic(1) title columnheader(16) lc rgb '#17becf'
set title 'rnb-echo-server (length frames, C echo)'
plot 'throughput-echo.dat' using 2:xtic(1) title columnheader(2) lc rgb '#555555' , 'throughput-echo.dat' using 3:xtic(1) title columnheader(3) lc rgb '#1f77b4' , 'throughput-echo.dat' using 4:xtic(1) title columnheader(4) lc rgb '#2ca02c' , 'throughput-echo.dat' using 5:xtic(1) title columnheader(5) lc rgb '#95cf95' , 'throughput-echo.dat' using 6:xtic(1) title columnheader(6) lc rgb '#9467bd' , 'throughput-echo.dat' using 7:xtic(1) title columnheader(7) lc rgb '#c9b3de' , 'throughput-echo.dat' using 8:xtic(1) title columnheader(8) lc rgb '#8c564b' , 'throughput-echo.dat' using 9:xtic(1) title columnheader(9) lc rgb '#ff7f0e' , 'throughput-echo.dat' using 10:xtic(1) title columnheader(10) lc rgb '#ffbf86' , 'throughput-echo.dat' using 11:xtic(1) title columnheader(11) lc rgb '#ffbb78'
set title 'resilnet rnp server (C handler)'
plot 'throughput-rnp.dat' using 2:xtic(1) title columnheader(2) lc rgb '#1f77b4' , 'throughput-rnp.dat' using 3:xtic(1) title columnheader(3) lc rgb '#2ca02c' , 'throughput-rnp.dat' using 4:xtic(1) title columnheader(4) lc rgb '#95cf95' , 'throughput-rnp.dat' using 5:xtic(1) title columnheader(5) lc rgb '#9467bd' , 'throughput-rnp.dat' using 6:xtic(1) title columnheader(6) lc rgb '#c9b3de'

unset multiplot
